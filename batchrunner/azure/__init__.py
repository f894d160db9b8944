"""
Azure: the OpenAI client and its transport, credentials and the token cache,
blob storage.
"""
