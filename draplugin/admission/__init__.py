"""Admission for netclaim configs: the `netclaim webhook` validating webhook (AdmissionReview v1).

`review` judges objects with the very parser Prepare uses, so a claim the webhook admits parses at
NodePrepareResources and a refusal names the same field path; `server` is the TLS HTTP front.
"""
