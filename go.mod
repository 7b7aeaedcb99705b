module github.com/guestward/guestward

go 1.25
