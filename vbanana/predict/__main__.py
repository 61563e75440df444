"""`python -m vbanana.predict`: see vbanana/predict/cli.py."""
import sys

from vbanana.predict import cli

if __name__ == "__main__":
  sys.exit(cli.main())
