"""Readers for dataset file formats found on disk: IDX (MNIST), CIFAR binary/python, image folders."""
