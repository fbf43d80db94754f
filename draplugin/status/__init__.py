"""Where status leaves the driver: `status.devices` entries, their validation, the apply queue, Events.

The path is: the attach code calls `StatusQueue.enqueue()` with a `ClaimStatus` snapshot (cheap, never
blocks); a worker turns the newest snapshot per claim into entries (`entries.build_entries`), checks them
(`validate.sanitize_entries`) and hands them to a `StatusSink` (`writer.ApiStatusSink` on a real cluster).
"""
