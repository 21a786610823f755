"""``python -m napari_disyre.cli``: what ``torchrun`` needs to start one training process per GPU."""

import sys

from . import main

sys.exit(main())
