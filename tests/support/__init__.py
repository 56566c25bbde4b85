"""What the tests share and are not tests themselves: the local Discord and provider server, Discord's API
description, snapshots, the bot as a process, and helpers for the Discord tests."""
