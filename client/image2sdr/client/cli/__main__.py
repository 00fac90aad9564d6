"""``python -m image2sdr.client.cli``: the ``image2sdr`` command."""

import sys

from ._main import main

sys.exit(main())
