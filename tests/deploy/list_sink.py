"""A sink that keeps every record in a list, so deploy tests can read what the live loop emitted."""

from deploy.sinks import Sink


class ListSink(Sink):
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(record)
