"""Training: structures -> exit waves -> focal series -> data set -> network -> export -> evaluation."""
