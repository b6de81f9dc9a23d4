module trustgrid.io/pod

go 1.25.0
