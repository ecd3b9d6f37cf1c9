"""The ways in: the braintumorcnn command and its subcommands, batch runs, Slicer nodes, previews."""
