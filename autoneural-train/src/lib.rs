//! Training: datasets, synthetic data, the four-stage recipe (see issue "Training").
