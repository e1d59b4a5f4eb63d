"""Configuration: where things live (``paths``: project root, ``conf/``, OmegaConf resolvers) and
the one check of a composed config before anything is written (``validation``)."""
