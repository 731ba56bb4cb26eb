"""Load testing of VideoConf nodes: scenarios of SDK bots, reports and a capacity search."""
