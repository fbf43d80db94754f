"""The driver's state under `--state-dir`: one file format, one owner.

`format` is the envelope every state file shares (kind, version, checksum, atomic 0600 writes, errors
that name the file); `plans` and `attachments` are the typed payloads of the two files, each with the
readers of its older versions. The stores (`draplugin.planstore`, `draplugin.attachments`) keep their
contents in memory and go through `format.StateFile` for the disk.
"""
