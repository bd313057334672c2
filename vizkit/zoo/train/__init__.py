"""Training recipes of the zoo, one module per model (what ``python -m vizkit.zoo build`` runs).

Each module holds everything used only to build its model: training loops, augmentations,
losses, the measurements written into ``config.json`` (scikit-learn, the pointing game through
:func:`vizkit.evaluate.localization`), tokenizer / processor / model construction, and a
``build(out_root, quick=False)`` that returns the metrics. The registry names each recipe as a
string (``Entry.build = "vizkit.zoo.train.mnist_vit:build"``) that the CLI imports
(:func:`vizkit.zoo.__main__.resolve_build`); the runtime zoo (loading, preprocessing, data)
never imports this package.

================  ==========================================
module            zoo model(s)
================  ==========================================
``mnist_vit``     ``mnist_vit``
``shapes_clip``   ``shapes_clip`` (``build``), ``shapes_clip_cnn`` (``build_cnn``)
``face_forgery``  ``face_forgery_detector``
``tiny_vlm``      ``tiny_vlm``
================  ==========================================
"""
