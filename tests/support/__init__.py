"""Test helpers shared by the test modules (real peers, no mocks)."""
