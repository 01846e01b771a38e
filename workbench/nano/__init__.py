"""nano: the built-in gpt-oss model, trained on this machine's CPU on the workbench's own Harmony data.

``data`` makes the conversations, ``train`` trains the model (``workbench train-nano``), ``ship`` packs the
trained rows into the package and writes the full checkpoint on first use, ``evaluate`` measures it.
"""
