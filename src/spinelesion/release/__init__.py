"""The release recipe as resumable stages: draw data, train, mine, fit, check, judge, publish."""
