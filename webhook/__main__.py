"""``kvbackup-webhook``: gunicorn with the webhook's configuration (``gunicorn.conf.py`` beside this file)."""

from __future__ import annotations

import os
import sys

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gunicorn.conf.py")


def main() -> None:
    from gunicorn.app.wsgiapp import run

    # Extra arguments go to gunicorn, e.g. ``kvbackup-webhook --log-level debug``.
    sys.argv = ["kvbackup-webhook", "--config", CONFIG, *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
