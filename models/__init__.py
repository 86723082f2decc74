"""Models: native AV-HuBERT (audio encoder, lip reader), TalkLip generator and discriminator."""
