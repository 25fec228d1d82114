"""seat-kit: reproduce SEAT/Cas-SEAT (arXiv 2501.05662) and EACO (arXiv 2412.04903).

Heavy libraries (torch, transformers) are imported by the modules that need them, never here,
so that ``import kit`` and ``kit --help`` stay fast.
"""

from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
