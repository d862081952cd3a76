"""Retrieval on embeddings: exact nearest neighbours and the k-NN vote (search), the ranking kernels (metrics) and
the eight PICR tasks (picr, tasks; METHOD.md section 5). Pure computation on arrays: training validates with it,
evaluation and inference answer with it."""
