import sys

from autograder.probes import main

sys.exit(main(sys.argv[1:]))
