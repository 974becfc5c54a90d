"""The chat side of Kaizen: model engine, emotion, persona, retrieval memory and the Gradio UIs."""
