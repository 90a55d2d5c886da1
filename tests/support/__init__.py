"""Code the tests share and that holds no test: generated data, tiny artifacts, process runners (issue 21, item 8).

Test modules import from here and never from one another; pytest fixtures built on these helpers live in
tests/conftest.py. bench/ scripts import the same helpers (they put tests/ on sys.path).

    paths            the repository, the venv's commands and the real-data folder
    examples         a tiny Examples artifact of class-shaped discs
    scans            synthetic lumbar scans written as NIfTI, DICOM, MHA or NRRD, and manifests for them
    identity_leaks   every byte of a run's outputs where a patient's identity could have been written
    model_artifacts  an untrained ac-GAN Model artifact and an Evaluation artifact with a chosen verdict
    trainer_runs     the trainer's small test settings and its command run as a process
    pipeline_runs    the vugan command as a user runs it, and the end-to-end tiny run
    privacy_controls generated cohorts, leaky generators and the privacy calibration scenarios
"""
