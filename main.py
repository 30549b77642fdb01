"""`python main.py [PROJECT|FOLDER...]` starts the FaceQC app (same as the `faceqc-gui` command)."""

import sys

from faceqc_gui.app import main

if __name__ == "__main__":
    sys.exit(main())
