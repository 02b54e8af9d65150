"""The command-line tools: `densenets train|eval|infer|...` and `tools/<name>.py` both call
`densenets.tools.<name>.main(argv)`, so the installed package offers every tool."""
