"""Configuration: where things live (``paths``: project root, ``conf/``, OmegaConf resolvers),
the one check of a composed config before anything is written (``validation``), the keys a
configured class takes (``settings``), the tracking store's URI and what may be said of it
(``store``), whether a tracking server lets us in (``access``) and the team's users
(``team_users``)."""
