"""pejax's configs, one `get_config()` per experiment; installed as `pejax.configs`, so that
`--config=unet_pe:quick` names one without a path."""
