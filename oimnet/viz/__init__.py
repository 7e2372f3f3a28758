"""Pictures of search results (shared by ``oimnet.demo`` and ``oimnet.visualize``)."""
