"""The FaceQC core: plain Python + torch, no Qt (checked by import-linter and by tests/test_architecture.py)."""
