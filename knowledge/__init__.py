"""FAQ / knowledge base: Markdown documents per language (`docs/es`, `docs/en`) and an offline retriever.

`knowledge.loader` reads and validates the documents; `knowledge.retriever.KnowledgeBase` answers debtors'
questions from them, or says it has no confident answer. Import those modules directly: this package imports
nothing, so `import knowledge` stays cheap (the retriever needs scikit-learn).
"""
