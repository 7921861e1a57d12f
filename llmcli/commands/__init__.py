"""The subcommands, one module per family, loaded only when named (so `--help` stays fast)."""
