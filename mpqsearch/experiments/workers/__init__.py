"""Warm worker processes: long-running evaluators that short-lived trial commands hand work to.

A trial command that imports torch and rebuilds the workload pays seconds before its first
useful instruction; a warm worker pays that once and then answers one request at a time over a
Unix domain socket. This package is the machinery, torch-free and independent of any driver:

- :mod:`.processes`: a process's identity (pid, start time, command line), dying with a parent
  or an anchor process, ending a process or a process group and waiting until it is gone;
- :mod:`.slots`: where the sockets, locks and logs live, one slot per concurrent trial, and how a
  client finds its slot's worker or starts it;
- :mod:`.protocol`: one JSON line each way per connection, with deadlines;
- :mod:`.server`: the worker's side (accept, check the peer, answer, exit when idle or orphaned);
- :mod:`.client`: a trial's side (take a slot, hand over the request, wait with a timeout, turn a
  dead or silent worker into a failed answer);
- :mod:`.pool`: a launcher's side (start the workers ahead, shut them all down).

What a worker computes is the caller's: the NNI driver's worker is
:mod:`mpqsearch.experiments.drivers.nni_worker`.
"""
