"""Allow `python -m ket_infra`."""

from ket_infra.cli import main

if __name__ == "__main__":
    main()
