"""Step 7, deploy: the champion's KServe InferenceService moves to each new champion (canary, Ready, smoke
request, all traffic), or back to the champion it replaced, alias included, when it does not come up."""
