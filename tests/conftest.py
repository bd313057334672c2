import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def dask_scheduler():
    """``tcp://127.0.0.1:PORT`` of a ``dask scheduler`` + ``dask worker`` (2 processes) started as
    subprocesses for the session (tests/helpers/daskcluster.py), stopped at its end."""
    from daskcluster import scheduler_and_worker

    with scheduler_and_worker(workers=2) as address:
        yield address


# ------------------------------------------------------------------ slow tests (make test-fast skips them)
# Real-component tests that start Dask clusters, papermill kernels, subprocess CLIs, zoo builds or VLM
# generation; each took 3 s or more in a full run on the 2-core CI machine (pytest --durations=0). Whole
# files, then single tests by name (every parametrization). `make test` runs them all.
SLOW_FILES = {
    "tests/distributed/test_sweep.py",
    "tests/distributed/test_batch_commands.py",
    "tests/distributed/test_distributed_eval.py",
    "tests/test_notebooks.py",
    "tests/test_setup.py",
    "tests/zoo/test_zoo_build_cli.py",
    "tests/zoo/test_zoo_recorded_metrics.py",
    "tests/cli/test_cli_flags_attention.py",
    "tests/cli/test_cli_flags_clip.py",
    "tests/cli/test_cli_flags_detectors.py",
    "tests/cli/test_cli_flags_vlm_run.py",
    "tests/scenarios/test_detector_gradcam_report.py",
    "tests/scenarios/test_detector_gradcam_sanity.py",
}
SLOW_TESTS = {
    "tests/test_docs.py": {
        "test_every_exported_name_has_a_docstring",
        "test_api_reference_lists_every_exported_name",
        "test_getting_started_snippets_run_as_written",
        "test_readme_snippet_runs_as_written",
        "test_generate_writes_every_generated_page",
    },
    "tests/scenarios/test_vlm_attention_video.py": {
        "test_many_samples_resume_failures_and_dask",
        "test_notebook_on_each_vlm_folder",
    },
    "tests/scenarios/test_clip_detector_attention.py": {
        "test_cli_on_a_deepfakebench_checkpoint_of_another_depth",
        "test_notebook_01_with_non_default_parameters",
        "test_cli_bad_input",
        "test_cli_refuses_a_folder_with_an_earlier_run",
    },
    "tests/scenarios/test_clip_text_gradcam_zoo.py": {"test_notebook_04_with_non_default_parameters"},
    "tests/scenarios/test_detector_gradcam_eval.py": {"test_zoo_evaluation_files_and_resume"},
    "tests/scenarios/test_evaluate_faithfulness.py": {
        "test_chunk_scores_equal_direct_calls_and_the_table_averages_them",
        "test_interrupted_run_resumes_to_the_same_table_and_a_run_without_the_flag_is_refused",
        "test_the_cli_on_a_local_cluster_of_two_workers_equals_the_local_run",
    },
    "tests/models/test_deepfakebench_parity.py": {
        "test_clip_b16_verbatim_yaml_three_clis",
        "test_xception_verbatim_yaml_detector_gradcam_and_evaluate",
        "test_clip_non_64_head_size_needs_and_takes_the_count",
    },
    "tests/testsets/test_deepfakebench_evaluate.py": {
        "test_deepfakebench_dataset_name_from_its_root",
        "test_missing_frames_then_added_rerun_completes",
    },
    "tests/cli/test_cli_errors.py": {"test_the_installed_command_prints_no_traceback"},
    "tests/models/test_swin_layouts.py": {"test_the_evaluate_cli_takes_layout"},
    "tests/math/test_cam_parity.py": {"test_resnet18_layer4[scorecam]"},
    "tests/math/test_cam_raw_maps.py": {"test_raw_layer_maps_of_a_cnn[scorecam]"},
    "tests/zoo/test_mnist_vit.py": {"test_accuracy_on_full_test_set", "test_quick_build_end_to_end_is_deterministic"},
    "tests/zoo/test_shapes_clip.py": {"test_quick_build_writes_a_loadable_checkpoint"},
    "tests/zoo/test_tiny_vlm.py": {"test_quick_build_writes_a_loadable_checkpoint"},
    "tests/zoo/test_face_forgery_detector.py": {"test_quick_build_end_to_end"},
    "tests/zoo/test_cards.py": {"test_card_command_numbers_equal_direct_metric_calls"},
    "tests/math/test_quantus.py": {  # the zoo's MNIST test set is read once for these (module fixture)
        "test_road_accuracy_curve_equals_quantus_road",
        "test_pointing_game_and_energy_equal_quantus",
        "test_deletion_curve_equals_quantus_pixel_flipping",
    },
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a real-component test of 3 s or more (make test-fast deselects it)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::")[0]
        name = item.name.split("[")[0]
        if path in SLOW_FILES or name in SLOW_TESTS.get(path, ()) or item.name in SLOW_TESTS.get(path, ()):
            item.add_marker(pytest.mark.slow)
