#!/usr/bin/env python
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from core.private import make_private

    make_private(settings.VAR_DIR)

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
