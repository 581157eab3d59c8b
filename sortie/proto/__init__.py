"""Sortie's wire contract: message types (messages), subjects (subjects), lifecycle (states).

Other services integrate by importing this package alone.
"""
