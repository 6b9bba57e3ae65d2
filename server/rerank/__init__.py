"""The rerank work: the served models, the scoring pipeline (job -> prompts -> score cache -> engine
-> ranking), admission and the priority lanes, prompts, long-document windows, the score cache."""
