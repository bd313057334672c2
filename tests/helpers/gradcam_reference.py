"""pytorch-grad-cam's classes, the reference every CAM parity test compares with, by vizkit's method
name, and the tolerances beyond the default 1e-4 (a helper module, not a test)."""

from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM

REFERENCE = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
TOL = {"scorecam": 1e-3}
