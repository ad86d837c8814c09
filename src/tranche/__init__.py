"""tranche: a marketplace engine where loan originators sell fractions of their loans to investors."""

__version__ = "0.1.0"
