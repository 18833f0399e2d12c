from __future__ import annotations

import sys

from ai_usage_exporter.cli.main import main

sys.exit(main())
