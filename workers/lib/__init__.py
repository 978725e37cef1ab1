"""What the reference worker types share: text, the web, feeds, the LLM client, the corpus."""
