"""TalkLip training: data, objective, curriculum, trainer; and the lip-reading expert trainer."""
