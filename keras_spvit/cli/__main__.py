"""`python -m keras_spvit.cli ARGS...`: the `keras-spvit` command."""

import sys

from keras_spvit.cli.main import main

sys.exit(main())
