"""`python -m taskbridge ...` = the `taskbridge` command; `torchrun --nproc_per_node N -m taskbridge fit RECIPE`
starts a data-parallel run (see `engine.distributed`)."""

from taskbridge.cli import main

if __name__ == "__main__":
    main()
