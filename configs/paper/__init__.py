"""The paper's experiments as sweep configs (JSRT/ACDC) and their phantom versions."""
