"""CNI in the claim (issue 16): a CNI network carried by a claim, run in the pod netns by the hook.

One module per job: `section` parses the claim's `cni` config section, `network` validates a CNI
network configuration (shape, versions, what would act outside the pod), `nad` reads a
NetworkAttachmentDefinition, `prepare` finishes a plan at NodePrepareResources (node-dependent
checks), `exec` is the thin subprocess adapter, `chain` runs ADD/DEL/CHECK per the CNI spec,
`result` reads a CNI result, `cache` keeps results on disk for teardown and restarts.
"""
