"""The sequential transformer ranker (SASRec family): model, training, checkpoints, scoring."""
