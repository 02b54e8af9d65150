"""Utilities: process groups, logging, visualisation."""
