"""The Redis key schema: every key corral writes is named here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "corral"
BATCH_INDEX = f"{PREFIX}:batches"  # sorted set: batch id scored by created_at (s)
FLEET_STATS = f"{PREFIX}:stats"  # hash: `<model>|<counter>` → fleet-wide counts (corral/stats.py)


def bucket_key(scope: str) -> str:
    """Hash: the fleet-wide RPM/TPM buckets and cooldown of one rate-limit scope."""
    return f"{PREFIX}:bucket:{scope}"


def feeding_key(model: str) -> str:
    """Sorted set: batch ids feeding this model's queue, scored by their last feed (s)."""
    return f"{PREFIX}:feeding:{model}"


def circuit_key(provider: str) -> str:
    """String (JSON {code, message}, with a TTL): the provider refused our key or quota."""
    return f"{PREFIX}:circuit:{provider}"


@dataclass(frozen=True)
class BatchKeys:
    """The keys of one batch. The `{id}` hash tag keeps a batch on one Redis Cluster slot."""

    batch_id: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:batch:{{{self.batch_id}}}"

    @property
    def meta(self) -> str:
        """Hash: status, timestamps, request counts, models."""
        return self._base

    @property
    def bodies(self) -> str:
        """Hash: custom_id → the routed request (JSON) of a line in flight, read by the worker
        that runs it; dropped when the line has its record (in the record store)."""
        return f"{self._base}:bodies"

    @property
    def attempts(self) -> str:
        """Hash: custom_id → its provider calls started, across reruns (a line with none has
        never been started)."""
        return f"{self._base}:attempts"

    @property
    def reruns(self) -> str:
        """Hash: custom_id → calls started before its latest `corral retry` (its attempts
        count from 1 again; its call numbers go on)."""
        return f"{self._base}:reruns"

    @property
    def inflight(self) -> str:
        """Hash: `custom_id#call` → call mark (JSON) of provider calls not yet settled:
        model, price version, bounds on input and output tokens, start, client request id.

        A mark left when its line ends is a call whose worker died or timed out: it may have
        been billed, so it moves to the ledger as an unsettled row, at most its worst case.
        """
        return f"{self._base}:inflight"

    @property
    def stats(self) -> str:
        """Hash: `<model>|<counter>` → live counts for `status --watch` (corral/stats.py)."""
        return f"{self._base}:stats"

    @staticmethod
    def call_id(custom_id: str, call: int) -> str:
        """The `inflight` field of one call of a line."""
        return f"{custom_id}#{call}"

    @property
    def suspects(self) -> str:
        """Set with a TTL: lines the reconciler's last sweep found with no record, lease or
        message; the next sweep sends those it finds so again (workers/reconciler.py)."""
        return f"{self._base}:suspects"

    @property
    def feeder(self) -> str:
        """String with a TTL: the feeder process sending this batch's lines now."""
        return f"{self._base}:feeder"

    def lease(self, custom_id: str) -> str:
        """String with a TTL: the worker running this line now."""
        return f"{self._base}:lease:{custom_id}"

    @property
    def lease_pattern(self) -> str:
        """SCAN pattern of the batch's leases."""
        return f"{self._base}:lease:*"

    def all(self) -> tuple[str, ...]:
        """Every long-lived key of the batch (leases expire by themselves)."""
        return (self.meta, self.bodies, self.attempts, self.reruns, self.inflight, self.stats,
                self.suspects)
