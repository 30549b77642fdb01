"""FaceQC: face-image dataset curation (quality, attributes, balance)."""

__version__ = "0.1.0"
