module github.com/network-correlator/network-correlator

go 1.26.0
