"""`python -m llmcli` runs the command line, as the `llmcli` script does."""

from llmcli.startup import main

if __name__ == "__main__":
    main()
